"""The pure core: what an answer means, when to try again, what a record may become.

No I/O here: no boto3, no HTTP, no clock reads. Every function takes ``now``, the random
source and its inputs as arguments and returns a value, so the Lambdas, the tests and the
benchmark all run the same decisions.
"""
