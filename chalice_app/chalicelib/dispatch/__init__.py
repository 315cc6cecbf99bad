"""The Dispatcher Lambda: S3 upload events in, jobs on the Audio Queue and a GPU worker out."""
