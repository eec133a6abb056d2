//! Representative items shared by the benchmarks, the allocation test and the secsgem
//! comparison (`scripts/bench.sh codec` encodes the same S6F11 body with secsgem).

use super::item::Item;

/// `<L [0]>`.
pub fn empty_item() -> Item {
    Item::L(Vec::new())
}

/// `<U4 0 1 … 1023>`.
pub fn u4_1024() -> Item {
    Item::U4((0..1024).collect())
}

/// An S6F11 event report body: DATAID, CEID and 3 reports of 10 mixed values each.
pub fn s6f11_body() -> Item {
    let report = |rptid: u32| {
        Item::L(vec![
            Item::U4(vec![rptid]),
            Item::L(vec![
                Item::U4(vec![rptid * 100]),
                Item::F4(vec![23.5]),
                Item::A(b"LOT-0001".to_vec()),
                Item::boolean(true),
                Item::I2(vec![-40]),
                Item::U1(vec![7]),
                Item::F8(vec![1013.25]),
                Item::A(b"RECIPE_A".to_vec()),
                Item::U2(vec![65000]),
                Item::I4(vec![-123456]),
            ]),
        ])
    };
    Item::L(vec![
        Item::U4(vec![1]),
        Item::U4(vec![4001]),
        Item::L(vec![report(1), report(2), report(3)]),
    ])
}

/// 100 lists of 1000 `<U4 n>` leaves each.
pub fn nested_100k() -> Item {
    Item::L(
        (0..100)
            .map(|i| Item::L((0..1000).map(|j| Item::U4(vec![i * 1000 + j])).collect()))
            .collect(),
    )
}
