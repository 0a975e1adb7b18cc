use super::guard::{percent_decode, query_param, same};
use super::*;

#[test]
fn hosts() {
    let h = Hosts::new("127.0.0.1:7878".parse().unwrap(), &[]);
    assert!(h.allows("127.0.0.1:7878"));
    assert!(h.allows("localhost:7878"));
    assert!(h.allows("LOCALHOST"));
    assert!(h.allows("[::1]:7878"));
    assert!(!h.allows("evil.example:7878"));
    assert!(!h.allows("localhost.evil.example"));
    assert!(!h.allows("10.0.0.1:7878"));
    assert!(!h.allows("localhost:x"));

    let h = Hosts::new("0.0.0.0:7878".parse().unwrap(), &["box.lan".into()]);
    assert!(h.allows("10.0.0.1:7878"));
    assert!(h.allows("box.lan:7878"));
    assert!(!h.allows("evil.example"));

    let h = Hosts::new("192.168.1.5:80".parse().unwrap(), &[]);
    assert!(h.allows("192.168.1.5"));
    assert!(!h.allows("192.168.1.6"));
}

#[test]
fn tokens() {
    assert_eq!(
        query_param("a=1&token=abc%2Fd", "token").as_deref(),
        Some("abc/d")
    );
    assert_eq!(query_param("a=1", "token"), None);
    assert_eq!(percent_decode("%"), "%");
    assert_eq!(percent_decode("%4"), "%4");
    assert!(same(b"abc", b"abc"));
    assert!(!same(b"abc", b"abd"));
    assert!(!same(b"abc", b"ab"));
}
