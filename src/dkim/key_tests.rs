//! Key loading: every kind of bad key file gets an error naming it.
