"""`chainette view OUT`: a local web page over a run directory (server, page and the reader they need); nothing here is
imported by `import chainette`."""
