//! TODO: plugin
