//! TODO: cdn
