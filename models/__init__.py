"""Net definitions in caffe.net_spec; `make prototxt` generates prototxt/ from them."""
