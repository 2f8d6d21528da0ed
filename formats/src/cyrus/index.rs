//! TODO(index): being written.
