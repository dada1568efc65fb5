"""Built-in renderers. They register through the `syncer.renderers` entry-point group like any plugin."""
