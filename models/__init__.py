"""Net definitions in caffe.net_spec; `make prototxt` generates prototxt/<recipe>/ from them and recipes/."""
