//! Tests of the generated code and the descriptor set served by reflection.

use prost::Message as _;
use prost_types::{FileDescriptorSet, ServiceDescriptorProto};

use crate::FILE_DESCRIPTOR_SET;

/// The service `name` of package `package` in the shared descriptor set.
fn service(set: &FileDescriptorSet, package: &str, name: &str) -> ServiceDescriptorProto {
    let file = set
        .file
        .iter()
        .find(|file| file.package() == package)
        .unwrap_or_else(|| panic!("the {package} package"));
    file.service
        .iter()
        .find(|service| service.name() == name)
        .unwrap_or_else(|| panic!("the {package}.{name} service"))
        .clone()
}

fn method_names(service: &ServiceDescriptorProto) -> Vec<&str> {
    let mut methods: Vec<&str> =
        service.method.iter().map(prost_types::MethodDescriptorProto::name).collect();
    methods.sort_unstable();
    methods
}

#[test]
fn descriptor_set_has_the_admin_service() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("a valid FileDescriptorSet");
    let service = service(&set, "steward.admin.v1", "Admin");

    assert_eq!(
        method_names(&service),
        [
            "CreateTenant",
            "CreateToken",
            "DeleteTenant",
            "GetResource",
            "GetTenant",
            "ListResources",
            "ListTenants",
            "ListTokens",
            "RevokeToken",
            "StopResource",
            "UpdateTenant",
            "WatchResources",
        ]
    );

    let watch = service
        .method
        .iter()
        .find(|method| method.name() == "WatchResources")
        .expect("WatchResources");
    assert!(watch.server_streaming(), "WatchResources streams its responses");
    assert!(!watch.client_streaming(), "WatchResources takes one request");
}

#[test]
fn descriptor_set_has_the_tenancy_service() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("a valid FileDescriptorSet");
    let service = service(&set, "steward.tenancy.v1", "Tenancy");

    assert_eq!(method_names(&service), ["WhoAmI"]);
    let who = &service.method[0];
    assert_eq!(who.input_type(), ".steward.tenancy.v1.WhoAmIRequest");
    assert_eq!(who.output_type(), ".steward.tenancy.v1.WhoAmIResponse");
    assert!(!who.server_streaming() && !who.client_streaming(), "WhoAmI is unary");
}

#[test]
fn descriptor_set_has_the_jobs_service() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("a valid FileDescriptorSet");
    let service = service(&set, "steward.jobs.v1", "Jobs");

    assert_eq!(
        method_names(&service),
        ["CancelJob", "CreateJob", "GetJob", "UpdateJob", "WatchJob"]
    );
    for method in &service.method {
        let name = method.name();
        assert_eq!(method.input_type(), format!(".steward.jobs.v1.{name}Request"));
        assert_eq!(method.output_type(), ".steward.jobs.v1.Job", "{name} answers with jobs");
        assert!(!method.client_streaming(), "{name} takes one request");
        assert_eq!(method.server_streaming(), name == "WatchJob", "only WatchJob streams");
    }
}

#[test]
fn descriptor_set_has_the_rooms_service() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("a valid FileDescriptorSet");
    let service = service(&set, "steward.rtc.v1", "Rooms");

    assert_eq!(
        method_names(&service),
        ["CloseRoom", "ListParticipants", "ListRooms", "RemoveParticipant", "SendData"]
    );
    for method in &service.method {
        let name = method.name();
        assert_eq!(method.input_type(), format!(".steward.rtc.v1.{name}Request"));
        assert_eq!(method.output_type(), format!(".steward.rtc.v1.{name}Response"));
        assert!(!method.client_streaming() && !method.server_streaming(), "{name} is unary");
    }
}
