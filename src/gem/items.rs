//! Reading and building the SECS-II items of GEM messages: IDs, acknowledge codes, lists.
//!
//! Readers return [`Illegal`] when a body does not have the structure SEMI E5 defines for the
//! message; the equipment then answers S9F7 (illegal data).

use crate::secs2::{Format, Item};

use super::model::Id;

/// The body's structure is not the one the standard defines: answer S9F7 (illegal data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Illegal;

/// The result of reading part of a received body.
pub type Parsed<T> = Result<T, Illegal>;

/// The body of a message that must have one.
pub fn required(body: Option<&Item>) -> Parsed<&Item> {
    body.ok_or(Illegal)
}

/// The children of an `L` item.
pub fn list(item: &Item) -> Parsed<&[Item]> {
    item.as_list().ok_or(Illegal)
}

/// The children of an `L` item that must have exactly `n` of them.
pub fn list_of(item: &Item, n: usize) -> Parsed<&[Item]> {
    match item.as_list() {
        Some(children) if children.len() == n => Ok(children),
        _ => Err(Illegal),
    }
}

/// An ID item (SVID, VID, ECID, CEID, RPTID, ALID, TRID, DATAID). E5 allows any integer
/// format or ASCII text. An integer outside 0..=u32::MAX, or text that is not a number, is a
/// well-formed ID that no variable can have (`Ok(None)`); any other format is illegal data.
pub fn id(item: &Item) -> Parsed<Option<Id>> {
    match item {
        Item::A(_) | Item::J(_) | Item::W { .. } => {
            Ok(item.as_text().and_then(|t| t.trim().parse::<Id>().ok()))
        }
        Item::I1(_)
        | Item::I2(_)
        | Item::I4(_)
        | Item::I8(_)
        | Item::U1(_)
        | Item::U2(_)
        | Item::U4(_)
        | Item::U8(_) => match item.as_int() {
            Some(v) => Ok(Id::try_from(v).ok()),
            None => Err(Illegal),
        },
        _ => Err(Illegal),
    }
}

/// A non-negative integer of any integer format (TOTSMP, REPGSZ, LENGTH, RSDC...).
pub fn unsigned(item: &Item) -> Parsed<u64> {
    match item {
        Item::B(_) | Item::Boolean(_) => Err(Illegal),
        _ => item
            .as_int()
            .and_then(|v| u64::try_from(v).ok())
            .ok_or(Illegal),
    }
}

/// A one-byte code (ack codes, ALED, RSDC, CEED): B, BOOLEAN or any integer format.
pub fn code(item: &Item) -> Parsed<i128> {
    item.as_int().ok_or(Illegal)
}

/// An ID as this equipment sends it: `<U4 id>`.
pub fn id_item(id: Id) -> Item {
    Item::U4(vec![id])
}

/// A one-byte acknowledge code: `<B code>`.
pub fn ack(code: u8) -> Item {
    Item::B(vec![code])
}

/// `<A text>`.
pub fn text(s: &str) -> Item {
    Item::ascii(s)
}

/// `<L>` with the given children.
pub fn l(children: Vec<Item>) -> Item {
    Item::L(children)
}

/// The zero-length list GEM replies use for "no such ID".
pub fn none() -> Item {
    Item::L(Vec::new())
}

/// The number in an item, as f64, for range and limit checks (`None` for text and lists).
pub fn number(item: &Item) -> Option<f64> {
    fn one<T: Copy + Into<f64>>(v: &[T]) -> Option<f64> {
        match v {
            [x] => Some((*x).into()),
            _ => None,
        }
    }
    match item {
        Item::F4(v) => one(v),
        Item::F8(v) => one(v),
        Item::I8(v) => match v.as_slice() {
            [x] => Some(*x as f64),
            _ => None,
        },
        Item::U8(v) => match v.as_slice() {
            [x] => Some(*x as f64),
            _ => None,
        },
        Item::B(_) | Item::Boolean(_) => None,
        other => other.as_int().map(|v| v as f64),
    }
}

/// `value` converted to `format`, when the conversion keeps its meaning: any number to any
/// numeric format that can hold it, text to text, booleans and binary as they are. `None`
/// when it cannot be done (the caller answers with its "illegal value" code).
pub fn convert(value: &Item, format: Format) -> Option<Item> {
    if value.format() == format {
        return Some(value.clone());
    }
    if format.is_numeric() && value.format().is_numeric() {
        return convert_number(value, format);
    }
    match format {
        Format::Ascii | Format::Jis8 | Format::Localized => {
            let t = value.as_text()?;
            Some(match format {
                Format::Ascii => Item::ascii(&t),
                Format::Jis8 => Item::J(t.bytes().collect()),
                _ => Item::localized(&t),
            })
        }
        Format::Boolean => Some(Item::boolean(value.as_int()? != 0)),
        _ => None,
    }
}

fn convert_number(value: &Item, format: Format) -> Option<Item> {
    macro_rules! ints {
        ($v:expr, $t:ty, $ctor:path) => {{
            let v = $v?;
            <$t>::try_from(v).ok().map(|x| $ctor(vec![x]))
        }};
    }
    let int = value.as_int();
    let float = number(value);
    // A float becomes an integer only when it is whole.
    let int = int.or_else(|| {
        float
            .filter(|f| f.fract() == 0.0 && f.abs() < 1e30)
            .map(|f| f as i128)
    });
    match format {
        Format::I1 => ints!(int, i8, Item::I1),
        Format::I2 => ints!(int, i16, Item::I2),
        Format::I4 => ints!(int, i32, Item::I4),
        Format::I8 => ints!(int, i64, Item::I8),
        Format::U1 => ints!(int, u8, Item::U1),
        Format::U2 => ints!(int, u16, Item::U2),
        Format::U4 => ints!(int, u32, Item::U4),
        Format::U8 => ints!(int, u64, Item::U8),
        Format::F4 => float.map(|f| Item::F4(vec![f as f32])),
        Format::F8 => float.map(|f| Item::F8(vec![f])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_integers_and_digits() {
        assert_eq!(id(&Item::U1(vec![7])), Ok(Some(7)));
        assert_eq!(id(&Item::I8(vec![-1])), Ok(None));
        assert_eq!(id(&Item::ascii("12")), Ok(Some(12)));
        assert_eq!(id(&Item::ascii("x")), Ok(None));
        assert_eq!(id(&Item::F4(vec![1.0])), Err(Illegal));
        assert_eq!(id(&Item::U4(vec![1, 2])), Err(Illegal));
        assert_eq!(id(&Item::L(vec![])), Err(Illegal));
    }

    #[test]
    fn conversions_keep_meaning() {
        assert_eq!(
            convert(&Item::U1(vec![5]), Format::F4),
            Some(Item::F4(vec![5.0]))
        );
        assert_eq!(
            convert(&Item::F8(vec![2.0]), Format::U2),
            Some(Item::U2(vec![2]))
        );
        assert_eq!(convert(&Item::F8(vec![2.5]), Format::U2), None);
        assert_eq!(convert(&Item::I4(vec![-1]), Format::U4), None);
        assert_eq!(convert(&Item::ascii("a"), Format::U4), None);
    }
}
