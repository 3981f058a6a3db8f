//! TODO-module notify
