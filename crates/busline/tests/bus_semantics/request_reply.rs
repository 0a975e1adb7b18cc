//! A request gets its reply (caused by it, in its inbox) or a timeout in
//! virtual time; a late reply is refused; no responders is an error at once.

use std::time::Duration;

use busline::{Bus, Message, RequestError};

#[tokio::test(start_paused = true)]
async fn request_times_out_in_virtual_time() {
    let bus = Bus::<u32>::new();
    let _silent = bus.subscribe("svc.slow").unwrap();
    let start = tokio::time::Instant::now();
    let err = bus
        .request("svc.slow", 1, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RequestError::Timeout {
            topic: "svc.slow".into(),
            timeout: Duration::from_secs(30)
        }
    );
    assert_eq!(start.elapsed(), Duration::from_secs(30));
}

/// A reply goes to its request's inbox and carries its lineage: caused by
/// the request, in the conversation the request started; `reply` and
/// `reply_msg` make the same envelope.
#[tokio::test]
async fn a_reply_is_caused_by_its_request_and_goes_to_its_inbox() {
    let bus = Bus::<u32>::new();
    let mut svc = bus.subscribe("svc.>").unwrap();
    let b = bus.clone();
    let responder = tokio::spawn(async move {
        let mut seen = Vec::new();
        for with_msg in [false, true] {
            let req = svc.recv().await.unwrap();
            let inbox = req.reply_to().cloned().unwrap();
            let answer = req.payload * 2;
            if with_msg {
                b.reply_msg(&req, Message::new(answer)).await.unwrap();
            } else {
                b.reply(&req, answer).await.unwrap();
            }
            seen.push((req.id, req.correlation_id, inbox));
        }
        seen
    });
    let mut replies = Vec::new();
    for n in [21, 5] {
        let reply = bus.request("svc.double", n, Duration::from_secs(5));
        replies.push(reply.await.unwrap());
    }
    let seen = responder.await.unwrap();
    for ((reply, (id, correlation, inbox)), want) in replies.iter().zip(seen).zip([42, 10]) {
        assert_eq!(reply.payload, want);
        assert_eq!(correlation, id, "a request starts its own conversation");
        assert_eq!(reply.causation_id(), Some(id));
        assert_eq!(reply.correlation_id, correlation);
        assert_eq!(reply.topic, inbox);
        assert!(inbox.as_str().starts_with("_INBOX."), "{inbox}");
        assert!(reply.source.is_none());
        assert!(reply.reply_to().is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn request_answered_before_timeout_and_late_reply_is_refused() {
    let bus = Bus::<u32>::new();
    let mut svc = bus.subscribe("svc.echo").unwrap();
    let b = bus.clone();
    let responder = tokio::spawn(async move {
        let first = svc.recv().await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        b.reply(&first, first.payload + 1).await.unwrap();
        let second = svc.recv().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        // The requester gave up at 5 s: the reply is refused, not lost silently.
        b.reply(&second, 0).await.unwrap_err()
    });
    let r = bus
        .request("svc.echo", 41, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.payload, 42);
    assert!(r.causation_id().is_some());
    let err = bus
        .request("svc.echo", 1, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Timeout { .. }));
    let late = responder.await.unwrap();
    assert!(late.to_string().contains("gone"), "{late}");
}

#[tokio::test]
async fn no_responders_is_immediate() {
    let bus = Bus::<u32>::new();
    let err = bus
        .request("nobody.home", 1, Duration::from_secs(3600))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RequestError::NoResponders {
            topic: "nobody.home".into()
        }
    );
}
