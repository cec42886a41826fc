//! bai coordinator library.
