//! A closed bus refuses publishes and subscriptions, and its streams end
//! once they have drained what they hold.

use busline::{Bus, PublishError};

#[tokio::test]
async fn closing_the_bus_ends_streams_after_draining() {
    use futures::StreamExt;
    let bus = Bus::<u32>::new();
    let sub = bus.subscribe("s").unwrap();
    for i in 0..3 {
        bus.publish_to("s", i).await.unwrap();
    }
    bus.close();
    assert!(matches!(
        bus.publish_to("s", 9).await,
        Err(PublishError::Closed { event: 9 })
    ));
    assert!(bus.subscribe("s").is_err());
    let got: Vec<u32> = sub.map(|r| r.unwrap().payload).collect().await;
    assert_eq!(got, vec![0, 1, 2]);
}
