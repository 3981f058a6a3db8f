//! TODO-module detect
