//! TODO-module window
pub const MAX_DIMS: usize = 6;
