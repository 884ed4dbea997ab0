//! The API's security scheme: Bearer API tokens.
use super::problem::{ApiError, ApiResult, Code};
use crate::auth::{Permission, Principal, tokens};
use crate::state::AppState;
use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use std::sync::Arc;

/// `Authorization: Bearer dkt_…`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "dkt_ API token", checker = "check_token")]
pub struct TokenAuth(pub Principal);

async fn check_token(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let unauthenticated = || {
        ApiError::new(Code::Unauthenticated, "send a valid, unexpired API token as `Authorization: Bearer dkt_…`")
            .with_header("www-authenticate", "Bearer".into())
    };
    let state = req.data::<Arc<AppState>>().ok_or_else(unauthenticated)?;
    match tokens::authenticate(&state.store, &bearer.token) {
        Ok(p) => Ok(p),
        Err(tokens::TokenError::Invalid) => Err(unauthenticated().into()),
        Err(tokens::TokenError::Store(e)) => Err(ApiError::from(e).into()),
    }
}

impl TokenAuth {
    /// The principal, if it holds `permission`.
    pub fn require(&self, permission: Permission) -> ApiResult<&Principal> {
        if self.0.can(permission) {
            Ok(&self.0)
        } else {
            Err(ApiError::new(
                Code::Forbidden,
                format!(
                    "this needs the `{}` permission, which the role `{}` lacks",
                    permission.as_str(),
                    self.0.role()
                ),
            ))
        }
    }
}
