//! The OpenAPI 3.1 document, generated from the function registry (never written by hand).

use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{ComponentsBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    Content, InfoBuilder, OpenApiBuilder, PathsBuilder, Ref, RefOr, Required, Schema,
};
use utoipa::{PartialSchema, ToSchema};

use super::envelope::Envelope;
use super::functions::{self, Access};

/// Statuses a function may answer with besides 200, each with the envelope.
const FAILURES: &[(&str, &str)] = &[
    ("400", "Missing or malformed parameters, or invalid input"),
    ("401", "No, wrong or revoked credentials"),
    (
        "403",
        "Not allowed (first login not done, or not from this machine)",
    ),
    ("404", "Unknown function, or no such mailbox"),
    ("408", "The request body did not arrive in time"),
    ("409", "A rule was broken; the message says what to do"),
    ("413", "Request body too large"),
    ("415", "Unsupported content type"),
    (
        "429",
        "Too many failed logins from this client; see Retry-After",
    ),
    ("503", "Storage unavailable or full"),
];

/// One POST path of the document.
struct Endpoint {
    path: String,
    operation_id: String,
    summary: &'static str,
    params: functions::NamedSchema,
    /// The type of the envelope's `result`; `None`: any (the polled function's).
    output: Option<functions::NamedSchema>,
}

pub fn document() -> serde_json::Value {
    let mut components = ComponentsBuilder::new()
        .security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        )
        .security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    let mut referenced = Vec::new();
    Envelope::schemas(&mut referenced);
    components = components.schema(Envelope::name(), Envelope::schema());
    let mut paths = PathsBuilder::new();
    let mut endpoints: Vec<Endpoint> = functions::FUNCTIONS
        .iter()
        .filter(|f| f.access() != Access::HostOnly)
        .map(|f| Endpoint {
            path: format!("/api/invoke/{}", f.name()),
            operation_id: f.name().to_owned(),
            summary: f.summary(),
            params: f.params_schema(),
            // A long-running function answers `running` (result null) at first; its result
            // comes from get-status.
            output: (!f.long_running()).then(|| f.output_schema()),
        })
        .collect();
    endpoints.push(Endpoint {
        path: "/api/get-metadata".into(),
        operation_id: "get-metadata".into(),
        summary: "Every function with its parameters.",
        params: functions::named_schema::<functions::NoParams>(),
        output: Some(functions::named_schema::<Vec<functions::FunctionMetadata>>()),
    });
    endpoints.push(Endpoint {
        path: "/api/get-status".into(),
        operation_id: "get-status".into(),
        summary: "The status of a long-running function's run; waits up to millisecondsTimeout for a change from lastKnownStatusVersion.",
        params: functions::named_schema::<super::jobs::StatusParams>(),
        output: None,
    });
    for endpoint in endpoints {
        let params = endpoint.params;
        referenced.extend(params.referenced);
        // A body is required when the function has a required parameter.
        let required = serde_json::to_value(&params.schema)
            .ok()
            .and_then(|schema| schema["required"].as_array().map(|r| !r.is_empty()))
            .unwrap_or(false);
        components = components.schema(params.name.clone(), params.schema);
        let params_ref = || RefOr::Ref(Ref::from_schema_name(params.name.clone()));
        let body = RequestBodyBuilder::new()
            .required(Some(if required {
                Required::True
            } else {
                Required::False
            }))
            .content("application/json", Content::new(Some(params_ref())))
            .content(
                "application/x-www-form-urlencoded",
                Content::new(Some(params_ref())),
            )
            .build();
        let success = match endpoint.output {
            // The envelope with this function's result in `result`.
            // Inline: result types such as `Vec<T>` share one schema name.
            Some(output) => {
                referenced.extend(output.referenced);
                let succeeded = ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property("result", output.schema)
                    .build();
                RefOr::T(Schema::AllOf(
                    utoipa::openapi::schema::AllOfBuilder::new()
                        .item(Ref::from_schema_name(Envelope::name()))
                        .item(succeeded)
                        .build(),
                ))
            }
            None => RefOr::Ref(Ref::from_schema_name(Envelope::name())),
        };
        let mut responses = ResponsesBuilder::new().response(
            "200",
            ResponseBuilder::new()
                .description("Succeeded")
                .content("application/json", Content::new(Some(success))),
        );
        for (status, description) in FAILURES {
            responses = responses.response(*status, envelope_response(description));
        }
        let operation = OperationBuilder::new()
            .operation_id(Some(endpoint.operation_id))
            .summary(Some(endpoint.summary))
            .request_body(Some(body))
            .responses(responses.build())
            .security(SecurityRequirement::new("basic", Vec::<String>::new()))
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        paths = paths.path(endpoint.path, PathItem::new(HttpMethod::Post, operation));
    }
    for (name, schema) in referenced {
        components = components.schema(name, schema);
    }
    let doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("gateway Management API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Every function is POST /api/invoke/<Function> with parameters as a JSON \
                     object or form fields, and answers with the same envelope.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components.build()))
        .build();
    serde_json::to_value(doc).unwrap_or_default()
}

fn envelope_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name(Envelope::name()))),
        )
        .build()
}

#[cfg(test)]
mod tests {
    /// The console sends `acceptTermsOfService: true`, forms and the CLI `"true"`: the schema
    /// says both, and that the optional flag is optional.
    #[test]
    fn boolean_parameters_are_described_as_a_boolean_or_its_string() {
        let doc = super::document();
        let params = doc["components"]["schemas"]
            .as_object()
            .and_then(|schemas| {
                schemas
                    .values()
                    .find(|s| s["properties"]["acceptTermsOfService"].is_object())
            })
            .expect("RequestAcmeCertificate's parameters");
        for name in ["acceptTermsOfService", "stagingFirst"] {
            let flag = &params["properties"][name];
            let kinds: Vec<&str> = flag["oneOf"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: {flag}"))
                .iter()
                .filter_map(|s| s["type"].as_str())
                .collect();
            assert_eq!(kinds, ["boolean", "string"], "{name}: {flag}");
        }
        let required: Vec<&str> = params["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(required.contains(&"acceptTermsOfService"), "{params}");
        assert!(!required.contains(&"stagingFirst"), "{params}");
    }

    /// schemathesis found failed answers (`"result": null`) and `GetMailboxes` (a list)
    /// breaking a `type: object` result.
    #[test]
    fn the_envelope_schema_allows_a_null_or_list_result() {
        let doc = super::document();
        let result = &doc["components"]["schemas"]["Envelope"]["properties"]["result"];
        assert!(result.is_object(), "{result}");
        assert!(result.get("type").is_none(), "{result}");
    }

    #[test]
    fn a_long_running_function_documents_its_running_answer_not_a_result() {
        let doc = super::document();
        let ok = &doc["paths"]["/api/invoke/CreateBackup"]["post"]["responses"]["200"]["content"]
            ["application/json"]["schema"];
        assert_eq!(ok["$ref"], "#/components/schemas/Envelope", "{ok}");
    }

    #[test]
    fn every_function_has_a_path_and_its_schemas_resolve() {
        let doc = super::document();
        assert_eq!(doc["openapi"], "3.1.0");
        for function in super::functions::FUNCTIONS
            .iter()
            .filter(|f| f.access() != super::Access::HostOnly)
        {
            let path = format!("/api/invoke/{}", function.name());
            assert!(doc["paths"][&path]["post"].is_object(), "{path}");
        }
        // Every $ref points at a schema in components.
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &reference[..reference.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "unresolved $ref {name}"
            );
        }
    }
}
