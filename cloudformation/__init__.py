"""The pipeline's CloudFormation stack: the template (``pipeline.yaml``) and the code that
creates it in an emulator and reads what it made (tests, local mode, deploy helpers)."""
