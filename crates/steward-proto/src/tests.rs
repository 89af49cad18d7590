use prost::Message as _;
use prost_types::FileDescriptorSet;

use crate::FILE_DESCRIPTOR_SET;

#[test]
fn descriptor_set_has_the_admin_service() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("a valid FileDescriptorSet");

    let file = set
        .file
        .iter()
        .find(|file| file.package() == "steward.admin.v1")
        .expect("the steward.admin.v1 package");
    let service = file
        .service
        .iter()
        .find(|service| service.name() == "Admin")
        .expect("the steward.admin.v1.Admin service");

    let mut methods: Vec<&str> =
        service.method.iter().map(prost_types::MethodDescriptorProto::name).collect();
    methods.sort_unstable();
    assert_eq!(methods, ["GetResource", "ListResources", "StopResource", "WatchResources"]);

    let watch = service
        .method
        .iter()
        .find(|method| method.name() == "WatchResources")
        .expect("WatchResources");
    assert!(watch.server_streaming(), "WatchResources streams its responses");
    assert!(!watch.client_streaming(), "WatchResources takes one request");
}
