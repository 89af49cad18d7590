//! [`ValidJson`]: a JSON body extractor whose errors name the offending field.
//!
//! actix-web's `Json` reports a wrong type as "invalid type: string, expected u32 at line 1
//! column 20", without the field. This one deserializes through `serde_path_to_error`, so a
//! 400 says `invalid `quotas.sockets`: invalid type: …`; unknown fields are refused by the
//! target types' `deny_unknown_fields` and named the same way.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::{StatusCode, header};
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;

use crate::ApiError;

/// Largest accepted JSON body: 64 KiB (tenant documents are small). The admin app sets it as
/// its `PayloadConfig`; larger bodies get 413.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// A JSON request body of type `T`, validated by serde; see the module docs for its errors.
#[derive(Debug)]
pub struct ValidJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for ValidJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .is_some_and(|m| {
                m.eq_ignore_ascii_case("application/json")
                    || m.eq_ignore_ascii_case("application/merge-patch+json")
            });
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let body = body.await.map_err(|e| {
                if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("the body is larger than {MAX_JSON_BODY} bytes"),
                    )
                } else {
                    ApiError::bad_request(format!("cannot read the body: {e}"))
                }
            })?;
            if !json_type {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "the body must be JSON (Content-Type: application/json)",
                ));
            }
            parse(&body).map(ValidJson)
        })
    }
}

/// Deserializes `body`, naming the field in the error.
///
/// # Errors
/// 400 `bad_request`: `invalid JSON body: …` for syntax errors, ``invalid `<path>`: …`` for a
/// field of the wrong type or an unknown field.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || path == "." {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid `{path}`: {inner}"))
        }
    })
}
