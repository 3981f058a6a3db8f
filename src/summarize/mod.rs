//! TODO-module summarize
