module github.com/torkbot/sandbox

go 1.26
