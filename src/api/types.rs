//! Strict scalar types for request bodies. poem-openapi's `String` accepts
//! numbers and booleans (`{"name": 5}` would become "5"); a wrong JSON type
//! must instead be refused, naming the field.
use poem_openapi::registry::MetaSchemaRef;
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use serde_json::Value;
use std::borrow::Cow;

/// A JSON string, and only a JSON string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl Type for Text {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        String::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        String::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Ok(Text(s)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_strings_parse() {
        assert_eq!(Text::parse_from_json(Some(Value::String("a".into()))).unwrap(), Text("a".into()));
        assert!(Text::parse_from_json(Some(serde_json::json!(5))).is_err());
        assert!(Text::parse_from_json(Some(serde_json::json!(true))).is_err());
    }
}

/// An optional field that may be left out but not sent as `null` (the schema
/// does not declare it nullable). For PATCH bodies: absent means "unchanged".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Optional<T>(pub Option<T>);

impl<T: Type> Type for Optional<T> {
    const IS_REQUIRED: bool = false;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        format!("optional_{}", T::name()).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_ref().and_then(Type::as_raw_value)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        match &self.0 {
            Some(v) => v.raw_element_iter(),
            None => Box::new(std::iter::empty()),
        }
    }

    fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

impl<T: ParseFromJSON> ParseFromJSON for Optional<T> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            None => Ok(Optional(None)),
            Some(Value::Null) => {
                Err(ParseError::custom("null is not allowed here; leave the field out to keep its value"))
            }
            Some(v) => T::parse_from_json(Some(v)).map(|t| Optional(Some(t))).map_err(ParseError::propagate),
        }
    }
}

impl<T: ToJSON> ToJSON for Optional<T> {
    fn to_json(&self) -> Option<Value> {
        self.0.as_ref().and_then(ToJSON::to_json)
    }
}

#[cfg(test)]
mod optional_tests {
    use super::*;

    #[test]
    fn absent_is_none_null_is_refused() {
        assert_eq!(Optional::<Text>::parse_from_json(None).unwrap(), Optional(None));
        assert!(Optional::<Text>::parse_from_json(Some(Value::Null)).is_err());
        assert_eq!(
            Optional::<Text>::parse_from_json(Some(Value::String("x".into()))).unwrap().0,
            Some(Text("x".into()))
        );
    }
}

/// A permission name, as operations require it and roles grant it.
#[derive(poem_openapi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename = "Permission")]
pub enum PermissionName {
    #[oai(rename = "org:read")]
    OrgRead,
    #[oai(rename = "org:write")]
    OrgWrite,
    #[oai(rename = "audit:read")]
    AuditRead,
    #[oai(rename = "members:read")]
    MembersRead,
    #[oai(rename = "members:write")]
    MembersWrite,
    #[oai(rename = "roles:write")]
    RolesWrite,
    #[oai(rename = "tokens:self")]
    TokensSelf,
    #[oai(rename = "tokens:manage")]
    TokensManage,
    #[oai(rename = "walls:manage")]
    WallsManage,
    #[oai(rename = "data:read")]
    DataRead,
    #[oai(rename = "clio:manage")]
    ClioManage,
    #[oai(rename = "webhooks:manage")]
    WebhooksManage,
    #[oai(rename = "data:export")]
    DataExport,
    #[oai(rename = "data:erase")]
    DataErase,
}

impl From<PermissionName> for crate::auth::Permission {
    fn from(p: PermissionName) -> Self {
        use crate::auth::Permission as P;
        match p {
            PermissionName::OrgRead => P::OrgRead,
            PermissionName::OrgWrite => P::OrgWrite,
            PermissionName::AuditRead => P::AuditRead,
            PermissionName::MembersRead => P::MembersRead,
            PermissionName::MembersWrite => P::MembersWrite,
            PermissionName::RolesWrite => P::RolesWrite,
            PermissionName::TokensSelf => P::TokensSelf,
            PermissionName::TokensManage => P::TokensManage,
            PermissionName::WallsManage => P::WallsManage,
            PermissionName::DataRead => P::DataRead,
            PermissionName::ClioManage => P::ClioManage,
            PermissionName::WebhooksManage => P::WebhooksManage,
            PermissionName::DataExport => P::DataExport,
            PermissionName::DataErase => P::DataErase,
        }
    }
}

/// The names of `list`, for the domain layer.
pub fn permission_names(list: Vec<PermissionName>) -> Vec<String> {
    list.into_iter().map(|p| crate::auth::Permission::from(p).as_str().to_string()).collect()
}
