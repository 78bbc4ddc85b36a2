//! TODO: faillog
