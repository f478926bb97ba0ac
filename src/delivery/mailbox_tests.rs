//! The mailbox's choices: the shared limit, and shares of one class.

use super::*;

/// (class, id)
#[derive(Debug, PartialEq)]
struct It(char, u32);

impl Classed for It {
    type Class = char;
    fn class(&self) -> &char {
        &self.0
    }
}

fn items(list: &[(char, u32)]) -> Vec<It> {
    list.iter().map(|(c, i)| It(*c, *i)).collect()
}

fn work(mb: &mut Mailbox<It>, session: Option<&char>) -> Vec<It> {
    let mut until = None;
    match mb.next_step(Asking {
        session,
        others_waiting: false,
        shutting_down: false,
        linger_until: &mut until,
    }) {
        Step::Work(w) => w,
        _ => panic!("expected work"),
    }
}

#[test]
fn the_smallest_limit_of_the_domains_wins() {
    let mut mb = Mailbox::default();
    assert_eq!(mb.admit(items(&[('a', 1), ('a', 2), ('a', 3)]), 16), 3);
    assert_eq!(mb.limit, 16);
    // A domain on the same MX set whose route allows 2: no more workers,
    // and the limit stays 2 for everyone.
    assert_eq!(mb.admit(items(&[('a', 4)]), 2), 0);
    assert_eq!(mb.admit(items(&[('a', 5)]), 16), 0);
    assert_eq!(mb.limit, 2);

    let mut mb = Mailbox::default();
    assert_eq!(mb.admit(items(&[('a', 1); 10]), 4), 4);
    assert_eq!(mb.workers, 4);
    // A limit of 0 means at least one connection.
    let mut mb = Mailbox::default();
    assert_eq!(mb.admit(items(&[('a', 1), ('a', 2)]), 0), 1);
}

#[test]
fn idle_workers_are_woken_before_new_ones_start() {
    let mut mb = Mailbox::default();
    assert_eq!(mb.admit(items(&[('a', 1)]), 4), 1);
    let _ = work(&mut mb, None);
    mb.idle = 1;
    assert_eq!(mb.admit(items(&[('a', 2), ('a', 3)]), 4), 1);
    assert_eq!(mb.workers, 2);
}

#[test]
fn a_share_is_of_one_class_and_keeps_the_order() {
    let mut mb = Mailbox::default();
    mb.admit(
        items(&[('a', 1), ('b', 2), ('a', 3), ('b', 4), ('a', 5)]),
        1,
    );
    // One worker: it may take everything of a class (up to the cap).
    assert_eq!(work(&mut mb, None), items(&[('a', 1), ('a', 3), ('a', 5)]));
    assert_eq!(mb.waiting, VecDeque::from(items(&[('b', 2), ('b', 4)])));
}

#[test]
fn an_open_session_takes_its_own_class_first() {
    let mut mb = Mailbox::default();
    mb.admit(items(&[('a', 1), ('b', 2), ('a', 3), ('b', 4)]), 1);
    assert_eq!(work(&mut mb, Some(&'b')), items(&[('b', 2), ('b', 4)]));
    // None of its class left: the oldest class instead (the session closes).
    mb.admit(items(&[('c', 5)]), 1);
    assert_eq!(work(&mut mb, Some(&'b')), items(&[('a', 1), ('a', 3)]));
    assert_eq!(work(&mut mb, Some(&'b')), items(&[('c', 5)]));
}

#[test]
fn a_share_is_split_among_workers_and_capped() {
    let mut mb = Mailbox::default();
    let many: Vec<(char, u32)> = (0..300).map(|i| ('a', i)).collect();
    assert_eq!(mb.admit(items(&many), 2), 2);
    assert_eq!(work(&mut mb, None).len(), MAX_PER_SESSION);
    assert_eq!(work(&mut mb, Some(&'a')).len(), MAX_PER_SESSION);
    // 100 left over 2 workers: half each.
    let next = work(&mut mb, Some(&'a'));
    assert_eq!(next.len(), 50);
    assert_eq!(next[0], It('a', 200));
}
