"""The bundled demo: a sample web app and the git repository it is deployed from."""
