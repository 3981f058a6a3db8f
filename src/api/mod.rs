//! TODO-module api
