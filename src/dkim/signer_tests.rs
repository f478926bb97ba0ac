//! Key choice and signing.
