//! TODO(dlist): being written.
