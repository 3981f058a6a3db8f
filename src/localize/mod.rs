//! TODO-module localize
