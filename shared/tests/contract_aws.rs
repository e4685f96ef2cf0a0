//! The port contract suite against the AWS adapters (DynamoDB, SQS, S3, SSM) on moto server,
//! each case on freshly created resources. `scripts/test` starts moto and sets
//! `OUTPOST_TEST_AWS_ENDPOINT`.

outpost_shared::contract_suite!(outpost_shared::aws::testing::contract_fixture);
