//! The `labelfleet.v1` gRPC API, generated from `proto/labelfleet/v1/labelfleet.proto`.

pub mod v1 {
    tonic::include_proto!("labelfleet.v1");

    /// Encoded `FileDescriptorSet` of the API, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/labelfleet_v1_descriptor.bin"));
}

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message;

    #[test]
    fn messages_round_trip_and_descriptor_names_every_service() {
        let label = Label {
            pair_id: "p1".into(),
            grade: 2,
            expected_grade: 1.8,
            distribution: vec![0.1, 0.2, 0.5, 0.2],
            ..Default::default()
        };
        let back = Label::decode(label.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, label);
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(|s| s.name().to_string()))
            .collect();
        assert_eq!(
            services,
            vec![
                "JobService",
                "TaskService",
                "WorkerControl",
                "TrainerService"
            ]
        );
    }
}
