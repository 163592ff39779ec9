//! The API's JSON shapes that several routes share (pages, lists, the error body), and how the
//! domain's own values look in JSON, for the OpenAPI document (`openapi.rs`). A handler returns
//! these types, so the document describes what is actually sent.

use crate::domain::webhook::UrlProblem;
use crate::domain::{DeliveryId, InstanceData, InstanceId, Millis, ProcessName};
use serde::Serialize;
use std::borrow::Cow;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{RefOr, schema::AdditionalProperties};
use utoipa::{PartialSchema, ToSchema};

/// A page of a list: `nextCursor` is given back as `?cursor=` for the next page, `null` on the
/// last one.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, next_cursor: Option<i64>) -> Self {
        Self {
            items,
            next_cursor: next_cursor.map(|c| c.to_string()),
        }
    }
}

/// A whole list, in one answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Items<T> {
    pub items: Vec<T>,
}

/// Every error answer: a stable machine `code` and a `message` for people. Bad callback URLs
/// also list what is wrong with each (`errors`, the first ones) and how many problems there are
/// in all (`errorCount`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[schema(example = "invalid_input")]
    pub code: Cow<'static, str>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<UrlProblem>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_count: Option<usize>,
}

impl ErrorBody {
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            errors: None,
            error_count: None,
        }
    }
}

/// A schema of its own name for a domain type whose JSON form is a string or an object.
macro_rules! named_schema {
    ($type:ty, $name:literal, $schema:expr) => {
        impl PartialSchema for $type {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }

        impl ToSchema for $type {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

named_schema!(
    Millis,
    "Timestamp",
    string("A point in time, RFC 3339 in UTC with milliseconds.")
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .examples(["2026-12-01T09:30:00.000Z"])
);

named_schema!(
    ProcessName,
    "ProcessName",
    string(
        "A process's name: lower-case letters, digits and single hyphens, starting with a \
         letter. Part of every instance ID; it cannot change."
    )
    .pattern(Some(ProcessName::PATTERN))
    .min_length(Some(1))
    .max_length(Some(ProcessName::MAX_LEN))
    .examples(["leave-request"])
);

named_schema!(
    InstanceId,
    "InstanceId",
    string("An instance: its process's name, a hyphen and its number in the process.")
        .pattern(Some(InstanceId::PATTERN))
        .examples(["leave-request-7"])
);

named_schema!(
    DeliveryId,
    "DeliveryId",
    string(
        "A delivery: `msg_` and 32 hex digits. Sent as the `webhook-id` header; the same on \
         every retry and redelivery."
    )
    .pattern(Some(DeliveryId::PATTERN))
    .examples(["msg_019ad5c2e3f07b3c9a4e5f60718293a4"])
);

named_schema!(
    InstanceData,
    "InstanceData",
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .description(Some(
            "The instance's fields: any JSON object, at most 256 KiB and 64 levels deep."
        ))
);
