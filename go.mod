module github.com/chronow/persister

go 1.26.0

require (
	github.com/sethvargo/go-envconfig v1.4.3
	go.mongodb.org/mongo-driver v1.17.10
)
