//! TODO-module eval
