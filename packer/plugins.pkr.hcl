# Plugin requirements for Packer >= 1.7 (`packer init packer/` installs the amazon plugin).
# Kept in a file of its own: Packer 1.6 (Debian's, used by CI to validate worker.pkr.hcl)
# has the amazon builder built in and rejects this block.
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.2.0"
    }
  }
}
