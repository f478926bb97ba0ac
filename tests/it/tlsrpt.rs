//! TLS-RPT (RFC 8460), the sending side: the reports validate against a
//! JSON schema written from RFC 8460 §4.4 (`tlsrpt/tlsrpt.schema.json`,
//! checked by Python's `jsonschema`), and the relay's counts equal the
//! sessions it made.

mod schema;
