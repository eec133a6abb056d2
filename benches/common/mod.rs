//! What several benchmarks share: the equipment side they send event reports from.

use secsgate::hsms::driver::{self, Mode, Settings};
use secsgate::link::{Link, Received};
use secsgate::secs2::{Message, sml};

/// A passive HSMS equipment endpoint on a free loopback port that answers the gateway's S1F13
/// (and nothing else on its own); its link, to send from, and its port.
pub async fn equipment() -> (Link, u16) {
    let mut s = Settings::new(Mode::Passive("127.0.0.1:0".into()));
    s.protocol.linktest = None;
    let e = driver::start(s).await.unwrap();
    let link = e.link.clone();
    let mut incoming = e.incoming;
    tokio::spawn(async move {
        while let Some(Received::Message(m)) = incoming.recv().await {
            if (m.stream, m.function) == (1, 13) {
                let body = sml::parse_item("<L [2] <B 0> <L [2] <A \"EQ\"> <A \"1\">>>").ok();
                let _ = link.reply(&m, body).await;
            }
        }
    });
    (e.link, e.local_addr.unwrap().port())
}

/// Event report `n` of a typical size: DATAID `n`, CEID `ceid`, one report of three values.
#[allow(dead_code)] // not every benchmark sends these
pub fn event(n: u64, ceid: u64) -> Message {
    sml::parse_message(&format!(
        "S6F11 W <L [3] <U4 {n}> <U4 {ceid}> <L [1] <L [2] <U4 1> <L [3] <U4 {n}> <F4 23.5> <A \"LOT-0001\">>>>> ."
    ))
    .unwrap()
}
