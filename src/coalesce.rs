//! TODO: coalesce
