use super::*;

fn txt(records: &[&str]) -> Result<TxtRecord, PolicyError> {
    let records: Vec<Vec<u8>> = records.iter().map(|r| r.as_bytes().to_vec()).collect();
    parse_txt(&records)
}

#[test]
fn txt_records_per_rfc_8461_section_3_1() {
    let id = |r: Result<TxtRecord, PolicyError>| r.map(|t| t.id);
    assert_eq!(
        id(txt(&["v=STSv1; id=20160831085700Z;"])),
        Ok("20160831085700Z".into())
    );
    assert_eq!(id(txt(&["v=STSv1;id=abc"])), Ok("abc".into()));
    assert_eq!(id(txt(&["v=STSv1 ; id=abc ; ext.x=y-z"])), Ok("abc".into()));
    // Other TXT records at the name are discarded.
    assert_eq!(
        id(txt(&["v=spf1 -all", "v=STSv1; id=1", "hello"])),
        Ok("1".into())
    );
    assert_eq!(txt(&["v=spf1 -all"]), Err(PolicyError::NoRecord));
    assert_eq!(txt(&[]), Err(PolicyError::NoRecord));
    assert_eq!(txt(&["v=STSv10; id=1"]), Err(PolicyError::NoRecord));
    assert_eq!(
        txt(&["v=STSv1; id=1", "v=STSv1; id=2"]),
        Err(PolicyError::MultipleRecords(2))
    );
    for bad in [
        "v=STSv1",
        "v=STSv1;",
        "v=STSv1; id=",
        "v=STSv1; id=has-dash",
        "v=STSv1; id=abcdefghijabcdefghijabcdefghijabc", // 33 characters
        "v=STSv1; id=1;; x=y",
        "v=STSv1; id=1; novalue",
        "v=STSv1; id=1; -x=y",
        "v=STSv1; id=1; x=a=b",
    ] {
        assert!(matches!(txt(&[bad]), Err(PolicyError::Txt(_))), "{bad}");
    }
    assert!(matches!(
        parse_txt(&[b"v=STSv1; id=\xff".to_vec()]),
        Err(PolicyError::Txt(_))
    ));
}

const GOOD: &str = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";

#[test]
fn the_rfc_example_policy_parses_with_crlf_or_lf() {
    for text in [GOOD.to_string(), GOOD.replace("\r\n", "\n")] {
        let p = parse_policy(&text).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604_800);
        let mx: Vec<&str> = p.mx.iter().map(MxPattern::as_str).collect();
        assert_eq!(
            mx,
            ["mail.example.com", "*.example.net", "backupmx.example.com"]
        );
    }
    // No final line ending, unknown keys ignored, first of repeated kept.
    let p = parse_policy(
        "version: STSv1\nmode: testing\nmode: enforce\nfoo: bar\nmx: a.b\nmax_age:86400",
    )
    .unwrap();
    assert_eq!((p.mode, p.max_age), (Mode::Testing, 86400));
    // `none` needs no mx.
    let p = parse_policy("version: STSv1\nmode: none\nmax_age: 0\n").unwrap();
    assert_eq!((p.mode, p.mx.len()), (Mode::None, 0));
    assert_eq!(
        parse_policy(&format!("{GOOD}max_age: 31557600\n"))
            .unwrap()
            .max_age,
        604_800
    );
    let top = "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557600\n";
    assert_eq!(parse_policy(top).unwrap().max_age, MAX_AGE_LIMIT);
}

#[test]
fn malformed_policies_are_refused() {
    for bad in [
        "",
        "mode: enforce\nmx: a.b\nmax_age: 1\n", // no version
        "version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n", // wrong version
        "version: STSv1\nmx: a.b\nmax_age: 1\n", // no mode
        "version: STSv1\nmode: enforced\nmx: a.b\nmax_age: 1\n", // bad mode
        "version: STSv1\nmode: enforce\nmx: a.b\n", // no max_age
        "version: STSv1\nmode: enforce\nmax_age: 1\n", // no mx
        "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557601\n",
        "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n",
        "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 12345678901\n",
        "version: STSv1\nmode: enforce\nmx: *.*.b.c\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a*.b.c\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: *.com\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: localhost\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a_b.c\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 1\ngarbage line\n",
        "version: STSv1\nmode: enforce\nmx:\nmax_age: 1\n",
        "<html><body>not a policy</body></html>",
    ] {
        assert!(parse_policy(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn mx_patterns_match_per_section_4_1() {
    let p = |s: &str| MxPattern::parse(s).unwrap();
    assert!(p("mail.example.com").matches("mail.example.com"));
    assert!(p("mail.example.com").matches("MAIL.Example.COM."));
    assert!(p("Mail.Example.com.").matches("mail.example.com"));
    assert!(!p("mail.example.com").matches("mx.mail.example.com"));
    assert!(!p("mail.example.com").matches("example.com"));
    let w = p("*.example.com");
    assert!(w.matches("mx1.example.com"));
    assert!(w.matches("MX1.EXAMPLE.COM"));
    assert!(!w.matches("example.com"), "the wildcard needs one label");
    assert!(!w.matches("a.b.example.com"), "only one label");
    assert!(!w.matches(".example.com"));
    assert!(!w.matches("mx1.example.com.evil"));
    assert!(!w.matches("mx1.notexample.com"));
    let policy = Policy {
        mode: Mode::Enforce,
        mx: vec![p("a.example.com"), w],
        max_age: 1,
    };
    assert!(policy.mx_matches("a.example.com"));
    assert!(policy.mx_matches("b.example.com"));
    assert!(!policy.mx_matches("a.example.net"));
}

#[test]
fn policy_strings_are_the_lines() {
    assert_eq!(
        policy_strings("version: STSv1\r\nmode: testing\r\n\r\nmx: a.b\nmax_age: 5"),
        ["version: STSv1", "mode: testing", "mx: a.b", "max_age: 5"]
    );
}
