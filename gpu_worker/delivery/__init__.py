"""One Audio Queue delivery: receive and validate the message (step 1), and the lease whose
heartbeat keeps it hidden while the job runs."""
