//! bai agent library.
