module github.com/cachecrypt/cachecrypt/bench

go 1.26

replace github.com/cachecrypt/cachecrypt => ../

require github.com/stretchr/testify v1.12.1

require go.yaml.in/yaml/v3 v3.0.5 // indirect
