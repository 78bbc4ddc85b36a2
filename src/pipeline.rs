//! TODO: pipeline
/// A running pipeline.
pub struct Pipeline;
