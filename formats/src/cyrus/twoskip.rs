//! TODO(twoskip): being written.
