module ofsvectors/goformat

go 1.22
