"""Real servers and fixtures for the tests: test CA, Dovecot, local DOC², Entra ID, Graph and Key Vault."""
