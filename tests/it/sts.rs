//! MTA-STS (RFC 8461) against real peers: the policy host is Python's
//! `http.server` over TLS (`sts/policy_server.py`) on 127.0.43.x:443 with a
//! certificate from a test CA made with rcgen and given as
//! `mta_sts.ca_file`; the receiving MTAs are the in-process fake MX with
//! certificates from that CA (right name, wrong name, expired); DNS is the
//! in-process fake (`_mta-sts` TXT, MX, A, TLSA).
//!
//! `fetch` covers discovery, the fetch rules and the cache; `enforce` the
//! delivery decisions.

mod enforce;
mod fetch;
mod harness;
