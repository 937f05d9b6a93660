"""Where the gateway keeps state: the ports the pipeline uses, their AWS adapters (DynamoDB,
SQS, Secrets Manager, KMS) and one in-memory implementation of each (``stores.memory``)."""
