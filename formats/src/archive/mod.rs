//! TODO(archive): being written.
