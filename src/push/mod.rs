//! TODO: push
