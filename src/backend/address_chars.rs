//! Characters of e-mail addresses for the property tests of the servers'
//! address forms (Synapse's case folding, MAS's `LOWER()`).

use proptest::prelude::*;

/// Any character but `@`, spaces and control characters (the arguments
/// refuse them), with cased scripts often: Latin, Greek, Cyrillic,
/// Armenian, Georgian, Cherokee, Greek extended, Glagolitic, ligatures,
/// Deseret, Adlam, the sigmas and the dot; and, as often, `extra`, the
/// characters a server's own rules single out.
pub fn address_char(extra: impl Strategy<Value = char> + 'static) -> BoxedStrategy<char> {
    prop_oneof![
        any::<char>(),
        proptest::char::range('\u{41}', '\u{24f}'),
        proptest::char::range('\u{370}', '\u{58f}'),
        proptest::char::range('\u{10a0}', '\u{13ff}'),
        proptest::char::range('\u{1e00}', '\u{1fff}'),
        proptest::char::range('\u{2c00}', '\u{2c7f}'),
        proptest::char::range('\u{ab70}', '\u{abbf}'),
        proptest::char::range('\u{fb00}', '\u{fb17}'),
        proptest::char::range('\u{10400}', '\u{104ff}'),
        proptest::char::range('\u{1e900}', '\u{1e95f}'),
        Just('Σ'),
        Just('ς'),
        Just('.'),
        extra,
    ]
    .prop_filter("what an address can hold", |c| {
        *c != '@' && !c.is_whitespace() && !c.is_control()
    })
    .boxed()
}
