//! Action inputs: how an action's raw JSON `value` becomes the typed argument of its handler
//! ([`ActionInput`]), with [`Valid`] for `garde` validation.

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::protocol::http::Json;
use crate::protocol::inbound::Rejection;

/// Turns an action's raw `value` into the handler's input.
///
/// Implemented for [`Json<T>`](crate::Json) (any `DeserializeOwned`), [`Valid<T>`] (deserialized
/// then validated with `garde`), [`serde_json::Value`] and `()` (ignores the value). A missing
/// `value` reads as `null`.
pub trait ActionInput: Sized {
    /// Convert the raw value.
    fn from_value(value: Option<&RawValue>) -> Result<Self, Rejection>;
}

fn deserialize<T: DeserializeOwned>(value: Option<&RawValue>) -> Result<T, Rejection> {
    let text = value.map_or("null", RawValue::get);
    T::deserialize(TextObjectsOnly(text)).map_err(|e| Rejection::InvalidValue(e.to_string()))
}

/// A deserializer over an action's JSON text that refuses to read a struct from anything but
/// an object.
///
/// serde reads structs from sequences too (`[300, 300]` as `{x, y}`), which is not what an
/// action schema means: `{x: number, y: number}` must be an object. The text is read once,
/// without building a [`Value`] first.
struct TextObjectsOnly<'a>(&'a str);

impl<'a> TextObjectsOnly<'a> {
    fn read<T>(
        self,
        f: impl FnOnce(
            &mut serde_json::Deserializer<serde_json::de::StrRead<'a>>,
        ) -> Result<T, serde_json::Error>,
    ) -> Result<T, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(self.0);
        let out = f(&mut de)?;
        de.end()?;
        Ok(out)
    }
}

impl<'de> serde::Deserializer<'de> for TextObjectsOnly<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        self.read(|de| serde::Deserializer::deserialize_any(de, v))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        // RawValue text has no leading whitespace.
        if !self.0.starts_with('{') {
            // Parsed only to name what was found instead (or to report bad JSON).
            let value: Value = serde_json::from_str(self.0)?;
            return Err(serde::de::Error::invalid_type(
                unexpected(&value),
                &"an object",
            ));
        }
        self.read(|de| serde::Deserializer::deserialize_struct(de, name, fields, v))
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        self.read(|de| serde::Deserializer::deserialize_enum(de, name, variants, v))
    }

    fn deserialize_option<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        self.read(|de| serde::Deserializer::deserialize_option(de, v))
    }

    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        self.read(|de| serde::Deserializer::deserialize_newtype_struct(de, name, v))
    }

    fn deserialize_unit<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        self.read(|de| serde::Deserializer::deserialize_unit(de, v))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

fn unexpected(v: &Value) -> serde::de::Unexpected<'_> {
    use serde::de::Unexpected;
    match v {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(_) => Unexpected::Other("a number"),
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

impl<T: DeserializeOwned> ActionInput for Json<T> {
    fn from_value(value: Option<&RawValue>) -> Result<Self, Rejection> {
        deserialize(value).map(Json)
    }
}

impl ActionInput for Value {
    fn from_value(value: Option<&RawValue>) -> Result<Self, Rejection> {
        deserialize(value)
    }
}

impl ActionInput for () {
    fn from_value(_: Option<&RawValue>) -> Result<Self, Rejection> {
        Ok(())
    }
}

/// A value that was deserialized and then validated with [`garde::Validate`].
///
/// ```
/// use partyroom_room::Valid;
/// #[derive(serde::Deserialize, garde::Validate)]
/// struct Rename { #[garde(length(min = 1, max = 40))] name: String }
/// // Used as a handler argument: `|room, cx, Valid(r): Valid<Rename>| { ... }`
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Valid<T>(pub T);

impl<T> ActionInput for Valid<T>
where
    T: DeserializeOwned + garde::Validate,
    T::Context: Default,
{
    fn from_value(value: Option<&RawValue>) -> Result<Self, Rejection> {
        let v: T = deserialize(value)?;
        v.validate()
            .map_err(|e| Rejection::Validation(e.to_string()))?;
        Ok(Valid(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Move {
        x: i64,
        y: Option<i64>,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Dir {
        Up,
        Down,
    }

    fn read<T: DeserializeOwned>(text: Option<&str>) -> Result<T, Rejection> {
        let raw = text.map(|t| RawValue::from_string(t.to_owned()).unwrap());
        deserialize(raw.as_deref())
    }

    #[test]
    fn values_are_read_from_their_text() {
        assert_eq!(
            read::<Move>(Some(r#"{"x":1,"y":2}"#)).unwrap(),
            Move { x: 1, y: Some(2) }
        );
        assert_eq!(
            read::<Option<Move>>(Some(r#"{"x":1}"#)).unwrap(),
            Some(Move { x: 1, y: None })
        );
        assert_eq!(read::<Option<Move>>(None).unwrap(), None);
        assert_eq!(read::<i64>(Some("42")).unwrap(), 42);
        assert_eq!(read::<String>(Some(r#""a\n""#)).unwrap(), "a\n");
        assert_eq!(read::<Dir>(Some(r#""up""#)).unwrap(), Dir::Up);
        assert_eq!(read::<Vec<Dir>>(Some(r#"["down"]"#)).unwrap(), [Dir::Down]);
        read::<()>(None).unwrap();
        assert_eq!(read::<Value>(Some("[1]")).unwrap(), serde_json::json!([1]));
    }

    #[test]
    fn a_struct_is_never_read_from_an_array_or_a_wrong_type() {
        for bad in ["[1,2]", "1", r#""x""#, "null", r#"{"x":"1"}"#, r#"{"y":1}"#] {
            let err = read::<Move>(Some(bad)).unwrap_err();
            assert!(matches!(err, Rejection::InvalidValue(_)), "{bad}: {err:?}");
        }
        let Rejection::InvalidValue(msg) = read::<Move>(Some("[1,2]")).unwrap_err() else {
            unreachable!()
        };
        assert!(msg.contains("expected an object"), "{msg}");
        assert!(read::<u8>(Some("300")).is_err());
    }
}
