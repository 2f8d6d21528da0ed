//! TODO(header): being written.
